"""Route modules, one per AEP service. Each exposes ``router`` and may expose ``recover(emu)``,
called at start-up to resume work (loads, queries, jobs) interrupted by a restart."""
