"""Every model module, imported so that Base.metadata knows all tables (Alembic, tests)."""

from storage import models  # noqa: F401
from storage import models_ledger  # noqa: F401
from storage import models_content  # noqa: F401
from storage import models_campaigns  # noqa: F401
from storage import models_engage  # noqa: F401
from storage import models_console  # noqa: F401
from storage import models_webhooks  # noqa: F401
from storage import models_risk  # noqa: F401
from storage import models_settings  # noqa: F401
from storage import models_alerts  # noqa: F401
from storage import models_sandbox  # noqa: F401
