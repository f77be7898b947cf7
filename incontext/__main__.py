from incontext.cli import main

raise SystemExit(main())
