"""Benchmarks; results land in bench/results/ (ochre.bench)."""
