"""Tests that need no daemon: pure functions, the store on real files, the
scheduler and executor in-process, static checks of the units."""
