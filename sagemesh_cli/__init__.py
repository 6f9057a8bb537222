"""`sagemesh`, the command line for people (and, with --json, scripts).

main.py             the click group, and the one place failures become one line and an exit code
context.py          the options before the command, which server, the session a command runs with
config.py           the config file: the server, the stored login
credentials.py      the access token: given, or the stored login's, renewed
transports/         REST through the gateway, or gRPC to the services, behind one interface
commands/           one module per command or command group
knowledge_bases.py  --kb by name or id
files.py            which files an upload takes, and their checksums
uploads.py          uploading many files: bounded, resumable, waiting for indexing
output.py           text and tables for people, JSON for scripts
errors.py           exit codes and the errors that carry them
"""
