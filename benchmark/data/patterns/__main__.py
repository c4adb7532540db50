from benchmark.data.patterns import write_pattern

print(write_pattern())
