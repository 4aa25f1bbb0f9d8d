"""Run by Superset's own interpreter, never imported by the platform.

`.venv-superset/bin/python -I in_superset.py` reads one JSON request on stdin:
{"admin_user", "admin_password", "contents": {path: yaml}, "passwords": {path: pw}}
and, inside `create_app().app_context()`: upgrades Superset's metadata database,
creates its roles on first use (what `superset init` does), makes sure the admin user
exists with that password, then imports the bundle with Superset's own
`ImportAssetsCommand` (creates or overwrites every object by UUID). It prints one JSON
line: the ids of the imported dashboards by slug and the number of charts.
Secrets arrive on stdin only: never in argv, the environment or a file.
"""

import json
import sys


def main() -> int:
    request = json.load(sys.stdin)
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from flask_migrate import upgrade
        from superset import appbuilder, security_manager
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.extensions import db
        from superset.models.dashboard import Dashboard
        from superset.models.slice import Slice
        from superset.utils.core import override_user

        upgrade()  # `superset db upgrade`; quick when already at head
        if security_manager.find_role("Gamma") is None:  # `superset init`, once
            appbuilder.add_permissions(update_perms=True)
            security_manager.sync_role_definitions()
            db.session.commit()
        name, password = request["admin_user"], request["admin_password"]
        user = security_manager.find_user(username=name)
        if user is None:
            user = security_manager.add_user(
                name,
                "Antenna",
                "Admin",
                f"{name}@localhost",
                security_manager.find_role("Admin"),
                password=password,
            )
            if not user:
                print(json.dumps({"error": f"could not create the admin user {name!r}"}))
                return 1
        else:
            security_manager.reset_password(user.id, password)
        db.session.commit()
        contents = request.get("contents") or {}
        if contents:
            with override_user(user):
                ImportAssetsCommand(contents, passwords=request.get("passwords") or {}).run()
        slugs = [d for d in request.get("slugs", [])]
        dashboards = {
            d.slug: d.id for d in db.session.query(Dashboard).filter(Dashboard.slug.in_(slugs))
        }
        print(json.dumps({"dashboards": dashboards, "charts": db.session.query(Slice).count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
