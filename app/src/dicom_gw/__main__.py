from dicom_gw.cli import main

main()
