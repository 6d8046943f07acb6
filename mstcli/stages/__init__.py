"""Pipeline stages: each is a function from input files (and settings) to output files."""
