"""The key policy: the mode's minimum and nothing more; each problem names the permission and the fix."""

from __future__ import annotations

from backend.kraken.permissions import REQUIRED, KeyMode, ProblemKind, check_key_info, check_probes, describe

LIVE = sorted(REQUIRED[KeyMode.LIVE])


def info(permissions: list[str], **extra: object) -> dict[str, object]:
    return {"permissions": permissions, "nonceWindow": 0, "validUntil": "0", "queryFrom": "0", "queryTo": "0",
            "ipAllowlist": ["10.0.0.1"], **extra}  # fmt: skip


def test_the_minimal_live_key_is_accepted_without_warnings() -> None:
    report = check_key_info(info(LIVE), KeyMode.LIVE, 1_800_000_000)
    assert report.accepted and report.problems == () and report.warnings == ()
    assert list(describe(report))[0] == "key accepted for live mode (checked with GetApiKeyInfo)"


def test_withdraw_and_extra_permissions_are_each_named_with_the_fix() -> None:
    report = check_key_info(info([*LIVE, "withdraw-funds", "add-withdraw-address", "export-data", "future-power"]),
                            KeyMode.LIVE, 1_800_000_000)  # fmt: skip
    kinds = {p.subject.split(" ")[0]: p.kind for p in report.problems}
    assert kinds == {"withdraw-funds": ProblemKind.MOVES_FUNDS, "add-withdraw-address": ProblemKind.MOVES_FUNDS,
                     "export-data": ProblemKind.MORE_THAN_MINIMUM, "future-power": ProblemKind.UNKNOWN_PERMISSION}  # fmt: skip
    assert all("untick it on Kraken > Settings > API" in p.fix for p in report.problems)
    assert not report.accepted
    lines = list(describe(report))
    assert lines[0].startswith("key REFUSED") and any("withdraw-funds (Funds permissions - Withdraw)" in line for line in lines)


def test_a_trading_key_is_more_than_shadow_needs_and_missing_ones_are_named() -> None:
    report = check_key_info(info(LIVE), KeyMode.SHADOW, 0)
    assert sorted(p.subject.split(" ")[0] for p in report.problems) == ["close-trades", "modify-trades"]
    missing = check_key_info(info(["query-funds"]), KeyMode.LIVE, 0)
    assert {p.kind for p in missing.problems} == {ProblemKind.MISSING} and len(missing.problems) == 4


def test_expiry_refuses_and_loose_settings_warn() -> None:
    report = check_key_info(info(LIVE, validUntil="100", nonceWindow=5, queryFrom="7", ipAllowlist=[]), KeyMode.LIVE, 200)
    assert [p.kind for p in report.problems] == [ProblemKind.EXPIRED]
    assert len(report.warnings) == 3
    assert check_key_info(info(LIVE, validUntil="300"), KeyMode.LIVE, 200).accepted
    assert check_key_info({"permissions": None}, KeyMode.SHADOW, 0).problems[0].kind is ProblemKind.MISSING


def test_probe_results_refuse_withdrawal_and_inconclusive_answers() -> None:
    assert check_probes(True, "denied", KeyMode.SHADOW).accepted
    assert check_probes(True, "allowed", KeyMode.SHADOW).problems[0].kind is ProblemKind.MOVES_FUNDS
    inconclusive = check_probes(True, "rate_limit: EAPI:Rate limit exceeded", KeyMode.LIVE)
    assert inconclusive.problems[0].kind is ProblemKind.INCONCLUSIVE and "nothing was stored" in inconclusive.problems[0].fix
    no_funds = check_probes(False, "denied", KeyMode.LIVE)
    assert no_funds.permissions == () and no_funds.problems[0].kind is ProblemKind.MISSING
    assert "warning: GetApiKeyInfo is unavailable" in "\n".join(describe(no_funds))
