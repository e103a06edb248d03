"""The live-play loop: stepper backends, input mapping, display (ochre.runtime)."""
