"""``python -m stream_ctr.monitoring.dashboards``: write or check the committed dashboards."""

import sys

from stream_ctr.monitoring.dashboards import main

sys.exit(main())
