"""Identity: tenants, users, argon2id passwords, JWT access tokens and
rotating refresh tokens.

server.py      wiring: settings, database, store, servicer
servicer.py    protobuf <-> domain
accounts.py    the domain: register, login, refresh, logout, validate
passwords.py   hashing and the password policy
tokens.py      signing keys, access tokens, refresh tokens
store.py       the store interface; store_sql.py implements it with SQLAlchemy
"""
