"""One module per CLI subcommand: `register(subparsers)` adds the parser, `args.func(args, settings)` runs it."""
