"""Test set-up shared by every test module.

Airflow reads ``AIRFLOW_HOME`` when it is first imported, so a throwaway home is set here, before any
test module imports Airflow: no test reads or writes the user's ``~/airflow``.
"""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="unkey-provider-tests-airflow-home-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME}/airflow.db")
# dag.test() serialises DAGs from the DAGs folder: the test DAGs live beside the tests.
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(__file__), "dags")
