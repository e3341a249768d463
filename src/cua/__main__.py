from cua.cli import main

raise SystemExit(main())
