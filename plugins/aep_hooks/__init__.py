"""Airflow provider for Adobe Experience Platform: hooks, operators, triggers and links."""
