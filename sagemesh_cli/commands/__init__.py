"""One module per command or command group (click commands; main.py adds them to `sagemesh`)."""
