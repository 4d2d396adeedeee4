from model.engine.build import main

raise SystemExit(main())
