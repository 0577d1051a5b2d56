"""The ``unkey`` connection form in a real browser, against a real Airflow api-server."""
