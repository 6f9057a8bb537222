"""Identity's domain metrics, in the process's Prometheus registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PASSWORD_CHECKS_IN_FLIGHT = Gauge(
    "sagemesh_identity_password_checks_in_flight",
    "Password hashes and verifications under way or waiting for a turn (passwords.PasswordHasher).")
PASSWORD_CHECKS_REFUSED = Counter(
    "sagemesh_identity_password_checks_refused_total",
    "Sign-ins and registrations refused because too many passwords were being checked at once.")
