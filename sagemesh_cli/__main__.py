from sagemesh_cli.main import main

main()
