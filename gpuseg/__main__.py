from gpuseg.cli import main

main()
