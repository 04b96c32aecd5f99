"""Floor 2: content packs, the Jinja2 sandbox and its budget, posters, charts, public pages and the
console's templates. Imports domain and storage."""
