"""`create_tables` runs only the DDL the catalog does not reflect (`ddl_applied`), so that
provisioning a current database takes no table locks. A statement of another form would
always run, and lock its table every time: each statement of `DDL` must have a known form."""

from __future__ import annotations

import pytest

from antenna_platform.warehouse import DDL, catalog_check


@pytest.mark.parametrize("stmt", DDL, ids=lambda s: " ".join(s.split())[:60])
def test_every_ddl_statement_has_a_form_the_catalog_check_knows(stmt):
    check = catalog_check(stmt)
    assert check is not None
    query, params, _ = check
    assert query.count("%s") == len(params) and all(params)
