from loadbench.cli import main

main()
