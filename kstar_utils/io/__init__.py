"""Files: every root the workbook reads (paths), every cached artefact, hash, sidecar and atomic write (cache), and
every published or measured table with its schema and every accuracy join (tables)."""
