from shared.migrations_env import run_migrations
from users.models import Base

run_migrations(Base.metadata)
