from ochre.cli import main

raise SystemExit(main())
