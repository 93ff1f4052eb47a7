"""deit-bench's measuring and reporting side: registry, size, speed, accuracy, records, tables, the gate."""
