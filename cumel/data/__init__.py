"""Data shipped with cumel: the example mel spectrogram that ``cumel demo`` inverts."""
