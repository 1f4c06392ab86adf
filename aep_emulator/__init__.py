"""A local Adobe Experience Platform emulator: AEP's REST APIs over PostgreSQL and S3."""
