from fota_host.cli import main

main()
