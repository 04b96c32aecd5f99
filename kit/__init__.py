"""Floor 3: what features build on (Feature, Ctx and the chat router, /api routes, console pages,
scopes, audit, jobs, metrics, the app's keys). Imports content, domain, storage; never a feature."""
