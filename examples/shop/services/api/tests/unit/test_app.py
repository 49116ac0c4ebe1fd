from api.app import main, respond


def test_healthz_answers_ok() -> None:
    assert respond("GET", "/healthz") == (200, "text/plain", b"ok\n")


def test_unknown_path_is_404_and_writes_are_405() -> None:
    assert respond("GET", "/missing")[0] == 404
    assert respond("POST", "/healthz")[0] == 405


def test_migrate_exits_zero(capsys) -> None:
    assert main(["migrate"]) == 0
    assert "schema is up to date" in capsys.readouterr().out
