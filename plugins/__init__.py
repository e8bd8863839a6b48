"""Airflow plugins shipped with reid-validate (registered through the ``airflow.plugins`` entry point)."""
