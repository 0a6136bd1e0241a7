"""One client after the federation: its session (local adapters, merges, Fisher, cached and charged) and the λ
estimators that read it."""
