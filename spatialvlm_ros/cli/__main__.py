"""``python -m spatialvlm_ros.cli``: the same as the ``spatialvlm`` command."""

import sys

from spatialvlm_ros.cli import main

sys.exit(main())
