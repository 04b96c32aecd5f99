"""Floor 6 (the top): the factory, the feature list and the CLI, the only code that names features
or loads the sandbox. Imports any floor below."""
