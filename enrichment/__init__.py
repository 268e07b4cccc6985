"""VirusTotal IP reputation enrichment."""
