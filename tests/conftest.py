import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # Tests run next to each other on 2 cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A private data root (mnist-small is unpacked here once per session)."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server per test session (loopback, random password); see postgres_server.py.
    Use `postgres.create_database(name)` for a fresh database URL."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()
