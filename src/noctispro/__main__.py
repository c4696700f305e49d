from noctispro.cli import main

raise SystemExit(main())
