from fhir_adapter.cli import main

raise SystemExit(main())
