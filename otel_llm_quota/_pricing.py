"""Cost per request: prices of (provider, model) pairs, resolved once and applied in integers.

A request's price is computed from its token counts as the GenAI conventions define them (input
tokens *include* the cache reads and writes, output tokens include reasoning), at the model's own
rates for uncached input, cache reads, cache writes and output, plus any per-request fee:

    cost = (input - cache_read - cache_write) * r_input + cache_read * r_cache_read
           + cache_write * r_cache_write + output * r_output + r_request

Prices come, first match wins, from the user's ``prices`` (config file ``prices:`` or
``set_prices``: a price per million tokens by provider and model pattern, or ``free``), then from
``genai-prices`` (the ``cost`` extra: the price table bundled with the installed release; its
auto-update is never started, so nothing is fetched at run time). A pair with no price is never
free and never guessed: its requests are counted as *unpriced*, with one warning per model.

Amounts are integers in micro-USD. Each resolved price keeps its rates as exact integers over one
common denominator; a request's cost is rounded once, to the nearest micro-USD (halves up), so
sums over requests are exact integer sums in every store. The per-(provider, model) resolution is
cached: the hot path does two dictionary look-ups and a few integer operations.

genai-prices rates are read by pricing probe usages with the library's own ``calc_price`` (so its
decomposition of input tokens into cached and uncached is followed exactly), once per tier of a
tiered price (Gemini's ">200k input tokens" rates: the tier is chosen by the request's input
tokens, as genai-prices does). Prices with a time constraint are taken as of the first request of
the process. Units other than tokens and requests (audio, images, web searches) are not priced;
1-hour cache writes are priced as the default cache writes.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, Final

__all__ = [
    "MICRO_USD",
    "Price",
    "check_usd",
    "PriceOverride",
    "Pricer",
    "micro_usd",
    "parse_price_overrides",
    "usd",
]

_logger = logging.getLogger(__name__)

MICRO_USD: Final = 1_000_000
"""Micro-USD per USD."""

MAX_PER_MILLION_USD: Final = 1_000_000
"""The largest price per million tokens (or per request) a price override may set, in USD."""


def micro_usd(amount_usd: float | int | str | Fraction) -> int:
    """``amount_usd`` in whole micro-USD, rounded to the nearest (halves up): the unit of limits."""
    value = Fraction(str(amount_usd)) if isinstance(amount_usd, float) else Fraction(amount_usd)
    return math.floor(value * MICRO_USD + Fraction(1, 2))


def check_usd(name: str, value: object) -> int:
    """A positive amount of USD (int or float, at least one micro-USD) as micro-USD, else
    TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of USD, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of USD, got {value!r}")
    micro = micro_usd(value)
    if not 1 <= micro <= 2**53:
        raise ValueError(
            f"{name} must be in [0.000001, {2**53 / MICRO_USD:.0f}] USD, got {value!r}"
        )
    return micro


def usd(amount_microusd: int) -> float:
    """Micro-USD as a float amount of USD (for display and metrics)."""
    return amount_microusd / MICRO_USD


@dataclass(frozen=True, slots=True)
class Price:
    """A resolved price: exact rates in USD per million tokens (and per request).

    ``tiers`` holds ``(input_tokens_above, Price)`` pairs, ascending: a request whose input
    tokens exceed the threshold is priced at that tier's rates (all its tokens).
    """

    input: Fraction
    output: Fraction
    cache_read: Fraction
    cache_write: Fraction
    request: Fraction = Fraction(0)
    source: str = ""
    tiers: tuple[tuple[int, Price], ...] = ()

    def cost_microusd(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> int:
        """The cost of one request in micro-USD (exact, rounded once, halves up)."""
        return _Rates.of(self).micro(input_tokens, output_tokens, cache_read, cache_write)


class _Rates:
    """A ``Price`` as integers over one denominator: what the hot path multiplies.

    Rates are micro-USD per token times ``den`` (USD per million tokens is micro-USD per token).
    """

    __slots__ = (
        "cache_read",
        "cache_write",
        "den",
        "den2",
        "fast",
        "input",
        "output",
        "request",
        "tiers",
    )

    def __init__(self, price: Price) -> None:
        parts = (price.input, price.output, price.cache_read, price.cache_write)
        request = price.request * MICRO_USD
        den = math.lcm(*(p.denominator for p in parts), request.denominator)
        self.input, self.output, self.cache_read, self.cache_write = (int(p * den) for p in parts)
        self.request = int(request * den)
        self.den = den
        self.den2 = 2 * den
        self.tiers = tuple((above, _Rates(tier)) for above, tier in price.tiers)
        self.fast: tuple[int, int, int, int] | None = (
            None
            if self.tiers
            else (2 * self.input, 2 * self.output, 2 * self.request + den, self.den2)
        )
        """Without tiers: ``QuotaLedger.record_checked`` inlines ``micro`` for requests without
        cache tokens, ``(input * f[0] + output * f[1] + f[2]) // f[3]``: the same arithmetic
        (``(2n + den) // 2den``), with the constants folded."""

    @staticmethod
    def of(price: Price) -> _Rates:
        return _Rates(price)

    def micro(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
    ) -> int:
        rates = self
        if self.tiers:
            for above, tier in reversed(self.tiers):
                if input_tokens > above:
                    rates = tier
                    break
        uncached = input_tokens - cache_read - cache_write
        if uncached < 0:  # breakdowns larger than the total: trust the breakdowns
            uncached = 0
        n = (
            uncached * rates.input
            + cache_read * rates.cache_read
            + cache_write * rates.cache_write
            + output_tokens * rates.output
            + rates.request
        )
        # floor(n / den + 1/2): the nearest micro-USD, halves up.
        return (2 * n + rates.den) // rates.den2


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A user's price for the models matching ``provider`` and ``model`` (fnmatch patterns).

    Rates are USD per million tokens; ``cache_read`` and ``cache_write`` default to ``input``.
    ``free=True`` prices every request at zero (a local model): counted as priced, not unpriced.
    """

    model: str = "*"
    provider: str = "*"
    input: Fraction = Fraction(0)
    output: Fraction = Fraction(0)
    cache_read: Fraction | None = None
    cache_write: Fraction | None = None
    request: Fraction = Fraction(0)
    free: bool = False

    def matches(self, provider: str | None, model: str | None) -> bool:
        return fnmatch.fnmatchcase((provider or "").lower(), self.provider.lower()) and (
            fnmatch.fnmatchcase((model or "").lower(), self.model.lower())
        )

    def price(self) -> Price:
        source = f"prices: {self.provider}/{self.model}"
        if self.free:
            zero = Fraction(0)
            return Price(zero, zero, zero, zero, zero, source)
        return Price(
            input=self.input,
            output=self.output,
            cache_read=self.input if self.cache_read is None else self.cache_read,
            cache_write=self.input if self.cache_write is None else self.cache_write,
            request=self.request,
            source=source,
        )


_RATE_KEYS: Final = ("input", "output", "cache_read", "cache_write", "request")
_OVERRIDE_KEYS: Final = frozenset(("provider", "model", "free", *_RATE_KEYS))


def _rate(where: str, key: str, value: Any) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}.{key} must be a number (USD), got {value!r}")
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{where}.{key} must be a number (USD), got {value!r}") from None
    if not 0 <= rate <= MAX_PER_MILLION_USD:
        raise ValueError(f"{where}.{key} must be in [0, {MAX_PER_MILLION_USD}], got {value!r}")
    return rate


def parse_price_overrides(entries: Any, where: str = "prices") -> tuple[PriceOverride, ...]:
    """Check and convert a ``prices:`` list (dicts or ``PriceOverride``s); ValueError if bad.

    Each entry: ``model`` (pattern, required), ``provider`` (pattern, default ``*``), then either
    ``free: true`` or ``input`` and ``output`` (USD per million tokens, required), with optional
    ``cache_read``, ``cache_write`` (per million tokens, default: ``input``) and ``request``
    (USD per request).
    """
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
        raise ValueError(f"{where} must be a list of prices, got {type(entries).__name__}")
    out: list[PriceOverride] = []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if isinstance(entry, PriceOverride):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise ValueError(f"{at} must be a mapping, got {type(entry).__name__}")
        unknown = set(entry) - _OVERRIDE_KEYS
        if unknown:
            raise ValueError(
                f"{at}: unknown key(s) {sorted(map(str, unknown))}; "
                f"expected {sorted(_OVERRIDE_KEYS)}"
            )
        for key in ("model", "provider"):
            value = entry.get(key, "*")
            if not isinstance(value, str) or not value:
                raise ValueError(f"{at}.{key} must be a non-empty pattern, got {value!r}")
        if "model" not in entry:
            raise ValueError(f"{at}: 'model' (a model name or pattern) is required")
        free = entry.get("free", False)
        if not isinstance(free, bool):
            raise ValueError(f"{at}.free must be true or false, got {free!r}")
        rates = {k: _rate(at, k, entry[k]) for k in _RATE_KEYS if k in entry}
        if free:
            if rates:
                raise ValueError(f"{at}: a free price takes no rates ({sorted(rates)})")
        elif "input" not in rates or "output" not in rates:
            raise ValueError(
                f"{at}: 'input' and 'output' (USD per million tokens) are required, or 'free: true'"
            )
        out.append(
            PriceOverride(
                model=entry["model"],
                provider=entry.get("provider", "*"),
                input=rates.get("input", Fraction(0)),
                output=rates.get("output", Fraction(0)),
                cache_read=rates.get("cache_read"),
                cache_write=rates.get("cache_write"),
                request=rates.get("request", Fraction(0)),
                free=free,
            )
        )
    return tuple(out)


# -- genai-prices --------------------------------------------------------------------------------

_import_lock = threading.Lock()
_genai: Any = None
_genai_missing = False


def _genai_prices() -> Any:
    """The ``genai_prices`` module (imported once), or None when the ``cost`` extra is absent."""
    global _genai, _genai_missing
    if _genai is not None or _genai_missing:
        return _genai
    with _import_lock:
        if _genai is None and not _genai_missing:
            try:
                import genai_prices
                from genai_prices import data_snapshot

                data_snapshot.get_snapshot()  # builds the bundled table; never auto-updates
                _genai = genai_prices
            except Exception:  # not installed (or broken): user prices only
                _genai_missing = True
    return _genai


def warm_up() -> None:
    """Import genai-prices on a background thread (its table takes ~0.4 s to load), so that
    the first LLM span of the app does not wait for it. Idempotent and never raises."""
    if _genai is not None or _genai_missing:
        return
    try:
        threading.Thread(target=_genai_prices, name="otel-llm-quota-prices", daemon=True).start()
    except Exception:  # no threads left: the first request imports it
        pass


def genai_prices_version() -> str | None:
    """The installed genai-prices release, or None."""
    module = _genai_prices()
    return None if module is None else str(module.__version__)


def _from_genai(provider: str, model: str) -> Price | None:
    module = _genai_prices()
    if module is None:
        return None
    from genai_prices import Usage, data_snapshot

    try:
        found_provider, info = data_snapshot.get_snapshot().find_provider_model(
            model, None, provider, None
        )
    except LookupError:
        return None
    model_price = info.get_prices(datetime.now(timezone.utc))
    starts = sorted(
        {
            tier.start
            for value in model_price.__dict__.values()
            for tier in getattr(value, "tiers", ())
        }
    )

    def total(**usage: int) -> Fraction:
        return Fraction(model_price.calc_price(Usage(**usage))["total_price"])

    source = f"genai-prices {module.__version__}: {found_provider.id}/{info.id}"

    def at(n: int, tiers: tuple[tuple[int, Price], ...] = ()) -> Price:
        # The rates at a total input of n tokens (the tier's): USD for n tokens of each kind,
        # per million tokens.
        request = total(input_tokens=0)
        plain = total(input_tokens=n)
        per_million = Fraction(MICRO_USD, n)
        return Price(
            input=(plain - request) * per_million,
            output=(total(input_tokens=n, output_tokens=n) - plain) * per_million,
            cache_read=(total(input_tokens=n, cache_read_tokens=n) - request) * per_million,
            cache_write=(total(input_tokens=n, cache_write_tokens=n) - request) * per_million,
            request=request,
            source=source,
            tiers=tiers,
        )

    return at(1, tuple((start, at(start + 1)) for start in starts))


# -- the resolver --------------------------------------------------------------------------------


class Pricer:
    """Resolves and caches the price of each (provider, model); prices requests in micro-USD.

    ``overrides`` are tried first (first match wins), then genai-prices (unless
    ``use_genai_prices`` is False). Thread-safe: the cache is filled by atomic dict stores, and
    resolving the same pair twice gives the same price.
    """

    def __init__(
        self, overrides: Iterable[PriceOverride] = (), *, use_genai_prices: bool = True
    ) -> None:
        self._overrides = tuple(overrides)
        self._use_genai = use_genai_prices
        # model -> provider -> rates (None: unpriced). Two levels: str keys hash once each.
        self._cache: dict[str | None, dict[str | None, _Rates | None]] = {}
        self._prices: dict[tuple[str | None, str | None], Price | None] = {}
        self._warned: set[str | None] = set()
        self._warned_missing = False

    @property
    def overrides(self) -> tuple[PriceOverride, ...]:
        """The user's prices, in the order they are tried."""
        return self._overrides

    def warm_up(self) -> None:
        """Load genai-prices' table in the background now (if this pricer uses it)."""
        if self._use_genai:
            warm_up()

    def rates(self, provider: str | None, model: str | None) -> _Rates | None:
        """The cached rates of a pair (resolving it on first use); None if unpriced."""
        by_provider = self._cache.get(model)
        if by_provider is not None:
            try:
                return by_provider[provider]
            except KeyError:
                pass
        price = self.price(provider, model)
        rates = None if price is None else _Rates(price)
        if len(self._cache) >= 4096:  # bounded: model names come from spans
            self._cache.clear()
        self._cache.setdefault(model, {})[provider] = rates
        return rates

    def cost(
        self,
        provider: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read: int = 0,
        cache_write: int = 0,
    ) -> int | None:
        """One request's cost in micro-USD, or None if its model has no price."""
        rates = self.rates(provider, model)
        if rates is None:
            return None
        return rates.micro(input_tokens, output_tokens, cache_read, cache_write)

    def price(self, provider: str | None, model: str | None) -> Price | None:
        """The price of a pair (uncached rates), or None. Warns once per unpriced model."""
        key = (provider, model)
        if key in self._prices:
            return self._prices[key]
        found: Price | None = None
        for override in self._overrides:
            if override.matches(provider, model):
                found = override.price()
                break
        if found is None and self._use_genai and provider and model:
            try:
                found = _from_genai(provider, model)
            except Exception:  # a broken table must not break counting: unpriced
                _logger.warning(
                    "otel-llm-quota: genai-prices failed to price %r/%r",
                    provider,
                    model,
                    exc_info=True,
                )
        if len(self._prices) >= 4096:
            self._prices.clear()
        self._prices[key] = found
        if found is None:
            self._warn(provider, model)
        return found

    def _warn(self, provider: str | None, model: str | None) -> None:
        if model in self._warned or len(self._warned) >= 1000:
            return
        self._warned.add(model)
        if model is None:
            _logger.info(
                "otel-llm-quota: requests without a model name (provider %r) are counted as "
                "unpriced",
                provider,
            )
            return
        hint = ""
        if self._use_genai and _genai_prices() is None and not self._warned_missing:
            self._warned_missing = True
            hint = (
                " (install otel-llm-quota[cost] for the genai-prices table)"
                if sys.version_info >= (3, 11)
                # genai-prices needs 3.11: the [cost] extra installs nothing on older Pythons
                else " (the genai-prices table needs Python 3.11 or later: give prices in the "
                "config file's 'prices:')"
            )
        _logger.warning(
            "otel-llm-quota: no price known for model %r of provider %r: its requests are "
            "counted as unpriced, not free; add it under 'prices:' in the config file%s",
            model,
            provider,
            hint,
        )
