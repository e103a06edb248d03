"""`ochre` as a subprocess under deterministic algorithms, for the exactness tests (conftest.py's
`exact` marker says why): python -c with the mode switched on before the command line runs."""

import sys

DETERMINISM = "import sys, torch; torch.use_deterministic_algorithms(True); "
DETERMINISTIC_OCHRE = [sys.executable, "-c", DETERMINISM + "from ochre.cli import main; sys.exit(main(sys.argv[1:]))"]
