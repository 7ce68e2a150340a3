"""The systemd tier: tests that boot a real systemd in systemd-nspawn (see conftest.py)."""
