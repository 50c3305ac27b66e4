"""The durable store: SQLModel tables on SQLite (default) or PostgreSQL, alembic migrations, and
small repository modules named for what they hold (outbox, inbox, snapshots, watermarks,
subscriptions, optouts, leases, audit, messages).

Typical use:

    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)                       # at start-up
    with session_scope(engine) as session:         # one transaction; commits on exit
        outbox.insert_planned(session, planned, company_id=company, now=clock.now())
"""

from server.store.db import create_db_engine, is_postgres, make_session, read_scope, session_scope
from server.store.migrate import upgrade_database
from server.store.states import Channel, EventSource, MessageStatus

__all__ = [
    "Channel",
    "EventSource",
    "MessageStatus",
    "create_db_engine",
    "is_postgres",
    "make_session",
    "read_scope",
    "session_scope",
    "upgrade_database",
]
