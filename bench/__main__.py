"""``python -m bench``: see :func:`bench.cli.main`; ``python -m bench audio ...`` runs the
mel-to-audio table (:mod:`bench.audio`), ``python -m bench info ...`` the memory and time of
``return_info=True`` on a large batch (:mod:`bench.info`)."""
import sys

if sys.argv[1:2] == ["audio"]:
    from .audio import main
    raise SystemExit(main(sys.argv[2:]))
if sys.argv[1:2] == ["info"]:
    from .info import main
    raise SystemExit(main(sys.argv[2:]))

from .cli import main

raise SystemExit(main())
