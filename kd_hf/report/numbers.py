"""How figures read in every table and summary: one spelling of a number, a mean with its interval, a percentage."""


def figure(value, digits: int = 3) -> str:
    """A count with thousands separators, a float with `digits` decimals, or a `{"mean", "low", "high"}` mean with its
    bootstrap interval; "–" where the figure is undefined (`None` in the JSON, NaN in memory, no examples)."""
    if isinstance(value, dict):  # a mean with its bootstrap interval
        if value.get("n") == 0 or figure(value["mean"]) == "–":
            return "–"
        return f"{value['mean']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def percent(value) -> str:
    return "–" if value is None else f"{value:.0%}"
