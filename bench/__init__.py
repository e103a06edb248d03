"""Benchmarks; results land in bench/results/ (ochre.bench)."""

from ochre.device import keep_large_blocks

keep_large_blocks()          # benchmarks run under the allocator settings of the commands they time
