"""What the device allows: each kernel's cost model against the device's bandwidth and FLOP rate.

Every kernel header in ``kernels/`` states its cost model on fixed lines, read here (and nowhere
else)::

    // cost <name>: frame_bytes = <expr>; frame_flops = <expr>; step_bytes = <expr>;
    // cost <name>: step_flops = <expr>; math = fp64 | item

(one or more lines per name, their keys merged). ``frame_*`` are paid once per frame,
``step_*`` once per frame and iteration (a Newton step, an SGD step, a Griffin-Lim iteration);
bytes are DRAM traffic, flops floating-point operations; ``math`` is the precision of the
arithmetic (``item``: the instantiation's type). An ``<expr>`` is arithmetic (``+ - * / **``,
parentheses, ``log2(...)``) on ``n_mels``, ``n_freqs``, ``n_fft``, ``hop`` and ``item`` (bytes
per value of the kernel's type).

The bound of a kernel on a device, in frames per second, for ``steps`` iterations a frame::

    B = frame_bytes + steps * step_bytes,  F = frame_flops + steps * step_flops
    bound = min(memory_bandwidth / B, peak_flops(math) / F)

with ``memory_bandwidth = 2 * memory clock * bus width / 8`` (double data rate) and
``peak_flops = SMs * clock * flops per clock per SM`` of the precision (:data:`FLOPS_PER_CLOCK`,
from the compute capability). A rate above the bound is impossible; far below it, the kernel is
limited by something its model does not count (latency, occupancy, the host).
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import asdict, dataclass

# (major, minor) -> (FP32, FP64) flops per clock per SM: FMA units x 2, from the published
# per-SM unit counts (CUDA C++ Programming Guide, arithmetic instructions throughput table).
FLOPS_PER_CLOCK = {
    (7, 0): (128, 64),     # V100
    (7, 5): (128, 4),      # T4
    (8, 0): (128, 64),     # A100
    (8, 6): (256, 4),      # A10, RTX 30
    (8, 7): (256, 4),
    (8, 9): (256, 4),      # L4, L40, RTX 40
    (9, 0): (256, 128),    # H100, H200
    (10, 0): (256, 128),   # B200
    (12, 0): (256, 4),     # RTX 50
}

VARIABLES = ("n_mels", "n_freqs", "n_fft", "hop", "item")
COST_KEYS = ("frame_bytes", "frame_flops", "step_bytes", "step_flops")
_COST_LINE = re.compile(r"^[ \t]*//[ \t]*cost[ \t]+(\w+)[ \t]*:(.*)$", re.MULTILINE)
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.Pow: operator.pow}
_FUNCTIONS = {"log2": math.log2}


class CostModelError(ValueError):
    """A ``// cost`` line that does not follow the grammar of this module."""


def evaluate(expression, values):
    """Value of a cost expression for ``values`` (a dict of :data:`VARIABLES`)."""
    def visit(node):
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in VARIABLES:
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](visit(node.left), visit(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -visit(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _FUNCTIONS and len(node.args) == 1 and not node.keywords):
            return _FUNCTIONS[node.func.id](visit(node.args[0]))
        raise CostModelError(f"not allowed in a cost expression: {ast.unparse(node)!r} "
                             f"(in {expression!r}; variables {', '.join(VARIABLES)}, log2)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CostModelError(f"cost expression {expression!r}: {exc.msg}") from None
    return float(visit(tree))


@dataclass(frozen=True)
class CostModel:
    """A kernel's stated cost: expressions per frame and per iteration, and its precision."""
    name: str
    frame_bytes: str = "0"
    frame_flops: str = "0"
    step_bytes: str = "0"
    step_flops: str = "0"
    math: str = "item"

    def per_frame(self, steps, **values):
        """``(bytes, flops)`` of one frame that takes ``steps`` iterations."""
        values = {name: values.get(name, 0) for name in VARIABLES}
        b = evaluate(self.frame_bytes, values) + steps * evaluate(self.step_bytes, values)
        f = evaluate(self.frame_flops, values) + steps * evaluate(self.step_flops, values)
        return b, f

    def precision(self, item):
        """"fp32" or "fp64": the arithmetic the flops are counted in."""
        if self.math == "item":
            return "fp64" if item == 8 else "fp32"
        return self.math


def parse_cost_lines(text):
    """``{name: CostModel}`` of the ``// cost`` lines of a kernel source."""
    found = {}
    for name, body in _COST_LINE.findall(text):
        fields = found.setdefault(name, {})
        for part in filter(None, (p.strip() for p in body.split(";"))):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in COST_KEYS + ("math",) or not value:
                raise CostModelError(f"cost line of {name}: cannot read {part!r} (keys "
                                     f"{', '.join(COST_KEYS)}, math)")
            if key in fields:
                raise CostModelError(f"cost line of {name}: {key} given twice")
            if key == "math" and value not in ("fp32", "fp64", "item"):
                raise CostModelError(f"cost line of {name}: math must be fp32, fp64 or item")
            if key != "math":
                evaluate(value, dict.fromkeys(VARIABLES, 1))        # checks the grammar
            fields[key] = value
    return {name: CostModel(name, **fields) for name, fields in found.items()}


def kernel_cost_models():
    """Every cost model stated in ``kernels/*.cu``, by name."""
    from cumel import cuda
    models = {}
    for source in sorted({source for source, _ in cuda.KERNELS}):
        for name, model in parse_cost_lines(cuda.kernel_source(source)).items():
            if name in models:
                raise CostModelError(f"cost model {name} stated twice")
            models[name] = model
    return models


@dataclass(frozen=True)
class DeviceModel:
    """The figures of a device the bound needs.

    Attributes
    ----------
    name : str
    sm_count : int
    clock_hz : float
        SM clock (the maximum the device reports).
    memory_bandwidth : float
        Bytes/s.
    fp32_flops_per_clock, fp64_flops_per_clock : float or None
        Per SM; None for a compute capability missing from :data:`FLOPS_PER_CLOCK`.
    compute_capability : str
        "9.0".
    """
    name: str
    sm_count: int
    clock_hz: float
    memory_bandwidth: float
    fp32_flops_per_clock: float | None
    fp64_flops_per_clock: float | None
    compute_capability: str

    def peak_flops(self, precision):
        per_clock = self.fp64_flops_per_clock if precision == "fp64" else self.fp32_flops_per_clock
        return None if per_clock is None else self.sm_count * self.clock_hz * per_clock

    def to_json(self):
        return {**asdict(self), "peak_fp32_flops": self.peak_flops("fp32"),
                "peak_fp64_flops": self.peak_flops("fp64")}


def memory_bandwidth(memory_clock_khz, bus_width_bits):
    """Peak DRAM bandwidth in bytes/s: two transfers a clock over the bus (HBM and GDDR report
    their clock so that this holds)."""
    return 2.0 * memory_clock_khz * 1e3 * bus_width_bits / 8.0


def device_model(properties, attributes=None):
    """A :class:`DeviceModel` from ``cupy.cuda.runtime.getDeviceProperties`` (``properties``)
    and device attributes (``attributes``: ``{"ClockRate": kHz, "MemoryClockRate": kHz,
    "GlobalMemoryBusWidth": bits}``, as ``cudaDeviceGetAttribute`` reports them).

    CUDA 13 removed ``clockRate`` and ``memoryClockRate`` from ``cudaDeviceProp``; the attributes
    are the source where the properties lack them. Raises ValueError naming what is missing.
    """
    attributes = attributes or {}

    def pick(prop, attribute):
        value = properties.get(prop)
        if not value:
            value = attributes.get(attribute)
        if not value:
            raise ValueError(f"the device reports neither {prop} nor {attribute}")
        return value

    name = properties.get("name", b"?")
    name = name.decode() if isinstance(name, bytes) else str(name)
    major, minor = int(properties["major"]), int(properties["minor"])
    per_clock = FLOPS_PER_CLOCK.get((major, minor), (None, None))
    return DeviceModel(
        name=name, sm_count=int(pick("multiProcessorCount", "MultiProcessorCount")),
        clock_hz=float(pick("clockRate", "ClockRate")) * 1e3,
        memory_bandwidth=memory_bandwidth(float(pick("memoryClockRate", "MemoryClockRate")),
                                          float(pick("memoryBusWidth", "GlobalMemoryBusWidth"))),
        fp32_flops_per_clock=per_clock[0], fp64_flops_per_clock=per_clock[1],
        compute_capability=f"{major}.{minor}")


def bound(model, device, steps, item, **shape):
    """Frames/s the device allows ``model`` at ``steps`` iterations a frame (see the module
    docstring): ``min(bandwidth / B, peak / F)``; the terms with a zero cost drop out.

    Returns
    -------
    dict
        ``frames_per_s``, ``limit`` ("memory" or "compute"), ``bytes_per_frame``,
        ``flops_per_frame``, ``precision``; ``frames_per_s`` None when the device's peak of that
        precision is unknown and the model has flops.
    """
    b, f = model.per_frame(steps, item=item, **shape)
    precision = model.precision(item)
    peak = device.peak_flops(precision)
    candidates = []
    if b > 0:
        candidates.append((device.memory_bandwidth / b, "memory"))
    if f > 0:
        if peak is None:
            return {"frames_per_s": None, "limit": f"unknown {precision} rate",
                    "bytes_per_frame": b, "flops_per_frame": f, "precision": precision}
        candidates.append((peak / f, "compute"))
    if not candidates:
        raise CostModelError(f"cost model {model.name} states no cost")
    rate, limit = min(candidates)
    return {"frames_per_s": rate, "limit": limit, "bytes_per_frame": b, "flops_per_frame": f,
            "precision": precision}


def combined(*rates):
    """Frames/s of stages run one after the other on every frame (times per frame add)."""
    if any(r is None or r <= 0 for r in rates):
        return None
    return 1.0 / sum(1.0 / r for r in rates)
