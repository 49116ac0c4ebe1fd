from forgegen.cli import main

main()
