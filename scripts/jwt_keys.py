"""Makes a new signing key pair for access tokens, for a deployment's Secrets:
`python scripts/jwt_keys.py DIR` writes DIR/<kid>.key.pem and DIR/<kid>.pub.pem
and prints the key id. To rotate, make a new pair, add it to both Secrets, and
remove the old pair once the tokens it signed have expired (identity signs
with the newest key; every service accepts all public keys it is given)."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.identity.tokens import create_signing_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    kid, _ = create_signing_key(parser.parse_args().directory)
    print(kid)


if __name__ == "__main__":
    main()
