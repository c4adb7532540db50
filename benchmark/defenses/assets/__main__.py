from benchmark.defenses.assets import write_pattern

print(write_pattern())
