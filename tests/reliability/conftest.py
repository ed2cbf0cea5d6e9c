from tests.common.conftest import toy_cfg  # noqa: F401  (the toy task's config fixture)
