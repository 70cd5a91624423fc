"""The errors a run reports in one line (main.py prints them and exits)."""


class ConfigError(ValueError):
  """A config that cannot run, found at start-up."""


class NonFiniteLossError(FloatingPointError):
  """The loss (or the parameters) became NaN or Inf."""
