from deepace.cli import main

main()
