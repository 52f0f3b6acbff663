from clusterlm.cli.main import entry

entry()
